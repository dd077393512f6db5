"""Who sent this message: SPF, DKIM, ARC and DMARC verdicts, written as Authentication-Results."""
