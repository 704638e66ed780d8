"""Referral (双向转诊) contracts."""
