"""Review: activation rules open human review tasks over model predictions; answers
become curated labels. Uses labeling for items and labels, never the other way round.
"""
