//! Aliyun's answers, as its SMS API (Dysmsapi) documents them, for the local
//! Aliyun servers of the tests and the crash bench.

use serde_json::{Value, json};

/// `SendSms` / `SendBatchSms` accepted, with `BizId` `biz_id`.
pub fn sent(biz_id: &str) -> String {
    json!({"Code": "OK", "Message": "OK", "BizId": biz_id,
           "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990"})
    .to_string()
}

/// `QuerySendDetails` of `number`: one delivered record per `OutId` it was sent with.
pub fn send_details<'a>(number: &str, out_ids: impl IntoIterator<Item = &'a str>) -> String {
    let records: Vec<Value> = out_ids
        .into_iter()
        .map(|out_id| {
            json!({"ErrCode": "DELIVERED", "TemplateCode": "SMS_1", "OutId": out_id,
                   "ReceiveDate": "2025-06-01 16:30:03", "SendDate": "2025-06-01 16:30:00",
                   "PhoneNum": number, "Content": "【Herald】Hi", "SendStatus": 3})
        })
        .collect();
    json!({"Code": "OK", "Message": "OK", "RequestId": "819BE656-D2E0-4858-8B21-B2E47708500B",
           "TotalCount": records.len(), "SmsSendDetailDTOs": {"SmsSendDetailDTO": records}})
    .to_string()
}
