"""pop3d: the POP3 front end of the mail drop."""

__version__ = "0.1.0"
