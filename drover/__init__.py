"""drover: deploy, upgrade, heal and replace Talos Linux Kubernetes clusters.

The library (this package) holds all the logic and never imports Prefect;
flows/ and tasks/ wrap it as Prefect flows and tasks.
"""

__version__ = "0.1.0"
