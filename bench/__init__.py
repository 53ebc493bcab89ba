"""Side-by-side benchmark of our IIIF stack against IIPImage and the codec floor.

`python -m bench --help` runs it; docs/benchmarks.md holds the latest results
and explains the method. One module per job:

* :mod:`bench.images` makes and caches the test masters and their derivatives;
* :mod:`bench.workload` turns image sizes into viewer-like IIIF URL lists (pure);
* :mod:`bench.procs` starts, stops and measures (RSS) local processes;
* :mod:`bench.servers` runs our stack, IIPImage behind lighttpd, and installs tools;
* :mod:`bench.s3` runs SeaweedFS and a latency proxy for the S3 case
  (:mod:`bench.latency_proxy` when the test suite's counting proxy is absent);
* :mod:`bench.load` drives a server with wrk (or an async fallback client);
* :mod:`bench.codec_floor` decodes the same regions in-process, no HTTP, no gRPC;
* :mod:`bench.profile` samples where our processes spend their time (py-spy);
* :mod:`bench.report` turns measurements into the ratio tables of docs/benchmarks.md;
* :mod:`bench.machine` records the machine and every component's version;
* :mod:`bench.run` sequences all of it; :mod:`bench.__main__` is the command line.
"""
