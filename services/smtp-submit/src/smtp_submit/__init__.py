"""smtp-submit: mail submission (RFC 6409) for the accounts of this mail drop."""
