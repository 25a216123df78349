"""The project's tests, a regular package so that ``tests`` means this folder even when an
installed distribution (the ``nfn`` wheel) ships a top-level package of the same name."""
