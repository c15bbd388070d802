// An app that does nothing and stays up: the unit of the footprint scenario.
setInterval(() => {}, 1 << 30);
