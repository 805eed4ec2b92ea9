"""Review: workflows whose activation conditions open human review tasks over model
predictions (or over the project's own labels, for suspected label errors); reviewers'
answers become curated labels. Uses labeling and automl, never the other way round.
"""
