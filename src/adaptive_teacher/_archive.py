"""The commit of a ``git archive`` of this repository (a release tarball, or a snapshot that a long background
run trains from): git fills it in on export (``export-subst`` in .gitattributes); in a checkout it stays a
placeholder and ``run_dir.code_version`` asks git instead."""

COMMIT = "$Format:%H$"
