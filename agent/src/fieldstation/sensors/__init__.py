"""Drivers. Each module is one driver; its name is the driver's name everywhere."""
