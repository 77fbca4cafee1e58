# Who sees what of the orders topic. The decision document is described in
# docs/policy.md: drop, or per field / per classification an action
# (clear, redact, mask, tokenize, encrypted); "default" covers the
# classified fields the decision does not name.
package strait

# Regional consumers read their own country's orders.
region := {"us-financial": "usa", "brazil": "brazil"}

# Nobody else reads anything.
default decision := {"drop": true}

decision := {"default": "clear"} if {
	# the full-PII consumer sees every field in clear
	input.principal.name == "full-pii"
} else := {"drop": true} if {
	# a regional consumer gets nothing of another country's orders
	input.value.country != region[input.principal.name]
} else := {
	# of its own country's: the financial fields and what is not classified
	"classifications": {"PII/Financial": "clear"},
	"default": "redact",
} if {
	region[input.principal.name]
}
