"""The decision engine: the policy and its contract, the facts, the fact index, the Authorizer,
Explain, and the reviewer tools (policydiff, policytest, policytools, policytrial)."""
