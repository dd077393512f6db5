"""What the maildrop services share: settings, logging, secrets, TLS, locks and the mailstore client.

Nothing else lives here: no service imports another service's package.
"""
