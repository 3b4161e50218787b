"""Operations: worker heartbeats, queue position and ETA, metrics and the System page's data."""
