"""Built-in messaging channels: email (SMTP, Maildir), sms, postcard."""
