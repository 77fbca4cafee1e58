# Run with: strait policy test .
package strait_test

import data.strait

order := {
	"name": "Joe Example", "address": "123 Main St", "country": "usa", "ssn_id": "123-45-6789",
	"account": "678900000234", "Order_time": "2024-03-01T10:00:00Z", "itemid": "A-17",
}

test_full_pii_sees_everything if {
	strait.decision == {"default": "clear"} with input as {"principal": {"name": "full-pii"}, "value": order}
}

test_brazil_gets_nothing_of_usa if {
	strait.decision.drop with input as {"principal": {"name": "brazil"}, "value": order}
}

test_us_financial_sees_financial_fields if {
	d := strait.decision with input as {"principal": {"name": "us-financial"}, "value": order}
	d.classifications["PII/Financial"] == "clear"
	d["default"] == "redact"
}

test_anyone_else_gets_nothing if {
	strait.decision.drop with input as {"principal": {"name": "mallory"}, "value": order}
}
