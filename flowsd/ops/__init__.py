"""Operations side channels: logging, metrics, health endpoints, systemd notify."""
