"""JT/T 808, the road-transport terminal protocol of truck GPS terminals: the codec (frames, messages,
replies) in ``citygrid.jt808.codec`` and the TCP listener in ``citygrid.jt808.server``."""
