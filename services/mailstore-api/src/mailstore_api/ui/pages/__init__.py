"""The console's pages, one module each: domains, accounts, aliases, messages."""
