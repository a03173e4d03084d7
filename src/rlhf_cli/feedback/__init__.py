"""Human (and judge) feedback: ranking collection (`rlhf label`), ratings (`rlhf elo`), agreement."""
