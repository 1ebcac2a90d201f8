"""Operations: metrics, readiness checks, start-up checks and the operator's commands."""
