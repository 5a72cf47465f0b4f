# nbunits: every IPython kernel of the image (sys.prefix/etc/ipython, read by
# ipykernel after the student's own profile).
#
# No parent poller. A kernel started by Jupyter checks every second that Jupyter
# is still its parent (JPY_PARENT_PID), so that it does not outlive a dead server.
# In a student's container nothing outlives the server: when Jupyter exits, the
# container's init does, and the kernel is killed with the rest. With 150 students
# active those checks were 9,000 wake-ups a minute (docs/BENCHMARKS.md).
c = get_config()  # noqa: F821 (IPython's config loader defines it)
c.IPKernelApp.parent_handle = 0
