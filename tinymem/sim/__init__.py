from .host import HostModel, build_host

__all__ = ["HostModel", "build_host"]
