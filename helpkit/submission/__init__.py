"""Docker submissions: render a build context, build the image, validate it under the platform contract.

Modules: ``render`` (templates to ``build/NAME``), ``wheelhouse`` (helpkit wheel plus its
dependencies, so a build needs no network), ``docker_build`` and ``base_image`` (images),
``static`` (checks of a build context without Docker), ``contract`` (one stage in a
container under the platform's limits) and ``validate`` (both stages, the output check,
the verdict and its JSON report). ``engine`` connects to Docker once, with one clear error.
"""
