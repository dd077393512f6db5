"""Run the maildrop stack as local processes: a throwaway redis-server and the three services."""
