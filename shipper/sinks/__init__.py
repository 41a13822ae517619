"""Sinks: where records go. See shipper.sinks.base for the contract."""
