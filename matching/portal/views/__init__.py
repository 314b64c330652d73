"""Portal views: plain functions behind ``access.portal_view`` (role and tenant checks on every URL)."""
