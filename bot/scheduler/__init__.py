"""Scheduling: durable jobs, reminders, the daily digest and the working-day calendar."""
