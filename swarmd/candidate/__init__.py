"""The loader side of a version: a process that reads a config and imports an app, so that the
supervisor never does either in its loop.

At the first start and in `swarmd check` the loader is a throwaway fork that answers and exits;
for a deploy it is a *candidate*: a fresh `python -m swarmd _candidate` (the swarmd code now on
disk) that loads the new version, then forks the deploy's nodes on request.
"""
