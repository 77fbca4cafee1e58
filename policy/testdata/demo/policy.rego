# The demo story: one orders topic, four consumers.
package strait

# Which country's records a regional consumer may read.
region := {"us-financial": "usa", "brazil": "brazil"}

# Nobody else reads anything.
default decision := {"drop": true}

decision := {"default": "clear"} if {
	# everything in clear, whatever the catalog's defaults
	input.principal.name == "full-pii"
} else := {"drop": true} if {
	# a regional consumer never sees another country's records
	input.value.country != region[input.principal.name]
} else := {
	# its own country's: only the financial fields and what is not classified
	"classifications": {"PII/Financial": "clear"},
	"default": "redact",
} if {
	region[input.principal.name]
}
