"""dashboard: the Plotly Dash app of unit economics."""
