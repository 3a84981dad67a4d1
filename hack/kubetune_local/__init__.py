"""Local development cluster helpers: the node agent standing in for the kubelet, and cluster scripts' Python parts."""
