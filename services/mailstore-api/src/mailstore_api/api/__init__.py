"""The HTTP routers: internal (front ends), admin (operators) and health."""
