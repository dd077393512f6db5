"""smtp-out: the outbound queue worker (claims, MX lookup, SMTP with STARTTLS, DKIM, reports)."""
