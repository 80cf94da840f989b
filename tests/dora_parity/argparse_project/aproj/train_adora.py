"""The argparse parity project wrapped by adora."""

from adora import argparse_main

from .parser_def import EXCLUDE, build_parser, train

main = argparse_main(parser=build_parser(), exclude=EXCLUDE)(train)
#: Same, with ``use_underscore=False`` (grid keys become ``--batch-size``).
main_dash = argparse_main(parser=build_parser(), exclude=EXCLUDE, use_underscore=False)(train)
