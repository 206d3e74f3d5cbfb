"""thermowatch: the command line and the pieces shared by every stage."""

__all__ = ["__version__"]

__version__ = "0.1.0"
