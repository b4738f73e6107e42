"""``rnnkernels bench``: side-by-side timing against PyTorch and Keras (the
options and the run are :mod:`rnnkernels.bench`'s)."""


def add_parser(sub):
    from .. import bench

    p = sub.add_parser("bench", help="time the kernels against PyTorch and Keras on identical inputs",
                       description=bench.DESCRIPTION)
    bench.add_arguments(p)
    p.set_defaults(run=run)
    return p


def run(args):
    from .. import bench

    return bench.run(args)
