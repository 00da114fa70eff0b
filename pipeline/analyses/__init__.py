"""Analyses that answer the questions the dashboard was made for, as plain computations on a
run's arrays: how attributes that occur together change each other's errors, how much an image's
neighbourhoods disagree between the label, feature and prediction spaces, and how sure a group's
metrics are. The dashboard's panels and the command line call them; they know nothing of either.
"""
