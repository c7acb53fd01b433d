"""The EC2 Query API front-end (``/ec2/``): see docs/ec2.md."""
