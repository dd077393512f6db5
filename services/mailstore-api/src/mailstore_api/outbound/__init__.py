"""The durable outbound queue: messages waiting to leave for remote recipients (smtp-out works
it through the internal API). :mod:`.store` keeps it on the volume, :mod:`.service` is what the
API calls do, :mod:`.dsn` builds the bounces and delay notices."""
