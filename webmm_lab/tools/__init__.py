"""The instructor's and the maintainer's tools, apart from the course's core (nothing in the core
imports them): the website (`book`), the student labs built from their solutions (`labs`),
grading a class's labs (`grading`, and the box each submission runs in, `gradebox`), the Colab
install cell and repository (`colab`), what a notebook costs on a GPU (`report`), and the
models' speed (`bench`). The `webmm-lab` command line (`webmm_lab.cli`) calls them.
"""
