"""Local development cluster: the node agent standing in for the kubelet, and the Python
parts of the cluster scripts (`cluster`, `certs`, `procs`)."""
