"""A warm process that runs stage commands in forked children, so that a stage skips its imports.

Each DVC stage is its own ``trackvision <stage>`` process, and each pays seconds to import torch,
MLflow and timm before it does any work; a search runs dozens of such processes. The server
imports them once; a stage command started with ``TRACKVISION_STAGE_SERVER`` set hands its
arguments, environment and standard streams to the server, which forks a child that runs the
command exactly as the process would have (``trackvision`` itself is imported fresh in each
child, from the command's own ``sys.path``, so a trial runs the code it was queued with). The
command waits for the child and exits with its status. Where the server cannot stand in for a
fresh process (another interpreter, other library files, other import-time settings), the
command says why and runs itself. A search's ``dvc exp run`` per trial is served the same way
(``client.run_served``): DVC's own imports are much of what a trial pays around its epochs.
Linux only: the server waits on children through pidfds.
"""
