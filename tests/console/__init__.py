"""Browser tests of the web console (`/ui`) in headless Chromium."""
