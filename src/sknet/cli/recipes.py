"""``sknet recipes``: the training recipes that ship with the package (``--config NAME``)."""

from __future__ import annotations

from ..training import list_recipes, recipe_path


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the packaged training recipes (sknet train --config NAME)")
    p.add_argument("name", nargs="?", help="print this recipe's YAML")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.name:
        print(recipe_path(args.name).read_text(), end="")
        return 0
    recipes = list_recipes()
    width = max(map(len, recipes))
    for name, about in recipes.items():
        print(f"{name:<{width}}  {about}")
    return 0
