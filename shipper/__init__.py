"""shipper: ship qmail and multilog logs to a SIEM as structured records."""

__version__ = "0.1.0"
