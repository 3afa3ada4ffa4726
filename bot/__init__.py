"""The VIP WeChat bot."""
