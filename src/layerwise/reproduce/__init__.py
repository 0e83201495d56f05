"""Reproduce the paper's figures: recipes (data, one YAML file per figure) and the runner that executes them."""

from layerwise.reproduce.recipe import BUDGETS, Recipe, Step, all_recipes, command_line, find_recipe, read_recipe
from layerwise.reproduce.runner import reproduce

__all__ = ["BUDGETS", "Recipe", "Step", "all_recipes", "command_line", "find_recipe", "read_recipe", "reproduce"]
