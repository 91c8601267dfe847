"""The embedded lab: an emulated datacenter of Talos nodes, timed by an injected clock."""
