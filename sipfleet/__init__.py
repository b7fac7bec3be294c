"""sipfleet: a SIP edge load balancer and control plane for media-server fleets."""

__all__ = ["__version__"]

__version__ = "0.1.0"
