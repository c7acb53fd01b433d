"""The composition root: settings in, drivers, service, front-ends and loops wired and started."""
