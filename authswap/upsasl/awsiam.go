package upsasl

import (
	ksasl "github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/aws"
)

// AWSCredentials sign AWS_MSK_IAM: an access key (with the session token of
// temporary credentials) of the IAM identity the principal maps to.
//
// The client message is franz-go's (pkg/sasl/aws, after the aws-msk-iam-auth
// Java library): a JSON object with version 2020_10_22, the broker host, the
// user agent, and the SigV4 query parameters of a presigned
// "GET https://<host>/?Action=kafka-cluster:Connect" for service
// kafka-cluster, valid 900 s. The region is taken from the broker host name
// (b-1.<cluster>.kafka.<region>.amazonaws.com, VPC endpoints included), else
// from AWS_REGION or AWS_DEFAULT_REGION.
type AWSCredentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	// UserAgent is sent as user-agent (default franz-go/<go version>/<host>).
	UserAgent string
}

func (a AWSCredentials) mechanism() ksasl.Mechanism {
	return aws.Auth{AccessKey: a.AccessKeyID, SecretKey: a.SecretAccessKey, SessionToken: a.SessionToken, UserAgent: a.UserAgent}.AsManagedStreamingIAMMechanism()
}
