package encrypt

import (
	"errors"

	"github.com/strait-proxy/strait/crypto/envelope"
)

// errAlreadyEncrypted refuses a produced record that carries Strait's
// headers (rules.Code: INVALID_RECORD).
var errAlreadyEncrypted = errors.New("record already carries a " + envelope.HeaderKey + " header: refusing to encrypt it twice or to let a client mark plaintext as encrypted")
