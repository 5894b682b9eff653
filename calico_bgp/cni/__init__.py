"""CNI: the protocol a container runtime speaks to its network plugins, and our plugins.

A plugin is exec'd once per container operation, so every module here that a plugin loads on
its way to a decision imports only the standard library (and dataplane/logfmt) at module level;
anything heavier is imported inside the function that needs it.
"""
