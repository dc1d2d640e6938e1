"""Peer contenders: small scripts launched as subprocesses, each printing one JSON line."""
